"""The sans-I/O core: per-message work as plain synchronous code.

Nothing here awaits, sleeps, reads a clock or touches storage; callers pass ``now`` in.
"""
