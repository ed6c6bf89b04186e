"""The function app's adapters: HTTP routes, the queue and tracking workers, timers, health and the API description."""
