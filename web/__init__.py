"""The web interface: server-rendered pages over the store for agents, compliance and admins."""
