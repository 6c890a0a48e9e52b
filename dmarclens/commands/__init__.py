"""Click commands beyond the spine, one module per area, loaded lazily by dmarclens.cli."""
