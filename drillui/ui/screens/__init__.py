"""The dashboard's screens: the drill menu, a running drill, and the modals they open."""
