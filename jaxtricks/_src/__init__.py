"""Shared internals of jaxtricks (private): argument checks, the one safe norm, dtype helpers.

Every family may import from here; nothing here imports a family.
"""
