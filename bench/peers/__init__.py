"""Peer runners for bench/compare.py: one framework each, all speaking the same line protocol."""
