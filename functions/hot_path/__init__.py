"""Optional Timestream hot path: copies each new raw object's samples into a Timestream table."""
