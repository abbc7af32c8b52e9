"""The contract shared by every layer: wire models, errors, status rules, units, the Backend ABC.

Imports nothing else of localsb.
"""
