"""The libraries a team would pick instead, set up the way their docs say."""
