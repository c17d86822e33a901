"""dvis.modeling"""
