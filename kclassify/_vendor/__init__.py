"""Third-party code kclassify carries unchanged (each file says where it comes from, its licence and why)."""
