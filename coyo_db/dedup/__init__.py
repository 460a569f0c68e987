"""Duplicate groups: exact and near pHash, COYO's own rules, semantic (SemDeDup), keepers."""
