"""The network side: the listening server, TLS, client authentication, the upstream connection and cancel keys."""
