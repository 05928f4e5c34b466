"""The fleet's own records (planner decisions are journal rows; see services)."""
