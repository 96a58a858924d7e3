"""The gRPC edge: servicers that translate protobuf to the domain and back, the interceptor, the
status table, health, TLS, metrics and page tokens. The only part of the service that imports
grpc."""
