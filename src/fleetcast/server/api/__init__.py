"""The HTTP layer: dependencies, error handlers, schemas and one router per resource."""
