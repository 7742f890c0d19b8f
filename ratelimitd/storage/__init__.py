"""Counter stores: a batch of one request's hits in, one outcome per hit out."""
