"""The quality team's workspace: a signed-in web app over a read model of carewatch's events."""
