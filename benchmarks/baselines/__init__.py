"""What the same work costs without any library: raw drivers, a bare handler call."""
