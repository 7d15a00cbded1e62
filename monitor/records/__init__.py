"""What the state store keeps, one concept per module, each a class over the store's database
(monitor/statedb.py); ``StateStore`` (monitor/store.py) owns the database, its schema and its
lifecycle, and composes them. Every class is thread-safe as the database is.
"""
