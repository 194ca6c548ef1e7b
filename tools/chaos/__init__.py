"""The chaos run (`make chaos`): seeded fault injection under load, then checks that nothing
acknowledged was lost, nothing was done twice, and every change was told (docs/reliability.md)."""
