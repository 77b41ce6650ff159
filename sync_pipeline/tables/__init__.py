"""The table registry: one declaration per warehouse table (columns, Arrow types, key, owning
asset, descriptions). See tables/registry.py for the lookups and how to declare a table.

This package's __init__ imports nothing: the normalisers import tables.columns while the
registry imports the normalisers' specs, and an eager import here would make that a cycle.
"""
