"""The file library: uploads stored safely, and what each file is."""
