"""dvis.evaluation"""
