"""ARM template deployments: the expression language (``expressions``, ``functions``), templates expanded into
resources to deploy (``engine``), how each resource type is deployed (``resource_types``) and the deployment
use cases (``deployments``)."""
