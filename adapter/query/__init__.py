"""Query translation: HA3 query strings and vector-service requests → plans → responses."""
