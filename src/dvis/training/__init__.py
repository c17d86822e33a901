"""dvis.training"""
