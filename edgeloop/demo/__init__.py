"""`edgeloop demo`: the whole edge-to-cloud loop on one machine."""
