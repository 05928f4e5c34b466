"""The FIFO session queue and shared labs arrive with the sessions capability."""
