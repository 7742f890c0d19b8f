"""Configuration: the YAML format, its validation and the immutable model it loads into."""
