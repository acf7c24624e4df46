"""Test infrastructure that is not a fixture: throwaway RabbitMQ nodes and clusters, TLS certificates."""
