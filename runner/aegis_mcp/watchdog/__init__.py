"""The watchdog: telling a hung agent from a busy or idle one, and acting on it."""
