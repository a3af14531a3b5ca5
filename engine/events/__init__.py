"""Action hooks: the event record delivered to the user's systems (``[hooks.NAME]``).

``outbox`` reads the record through a cursor per hook and hands batches to the hook's
transport (``transports``); ``messages`` builds each event's message in Altcraft's
structure (``docs/hooks.md``).
"""
