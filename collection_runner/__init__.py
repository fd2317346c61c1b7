"""kinesis-collection: keeps a collection current from Kinesis in one process (source read → destination write)."""
