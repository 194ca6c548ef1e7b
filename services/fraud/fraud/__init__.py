"""The fraud service: scores every payment 0-100 before it reaches a provider."""
