"""Ray actors of the live cluster: thin holders of state around the engines in trader/."""
