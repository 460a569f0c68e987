"""Vector indexes over embeddings and nearest-neighbour search by text, image or id."""
