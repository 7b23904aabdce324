"""opsagent capability ``rucio_snapshot_update``: Rucio campaign snapshots matched onto tasks.

``plugin`` declares it; ``update`` is the doer; ``fetch`` reads Rucio, ``match`` pairs
datasets with tasks, ``catalogue`` speaks to PCS, ``cachefiles`` writes the cache.
"""
