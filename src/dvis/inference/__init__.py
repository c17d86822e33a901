"""dvis.inference"""
