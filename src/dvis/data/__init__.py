"""dvis.data"""
