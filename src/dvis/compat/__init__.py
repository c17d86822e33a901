"""dvis.compat"""
