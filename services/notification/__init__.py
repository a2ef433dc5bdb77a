"""notification: tells the quality team and providers, by e-mail, with every delivery logged."""
