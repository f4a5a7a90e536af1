"""Run results -> static leaderboard site."""
