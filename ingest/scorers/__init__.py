"""Scorers: NSFW, faces, language, profanity and heads over embeddings, by name."""
