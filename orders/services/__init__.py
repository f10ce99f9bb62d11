"""Every write to an order's sync state goes through these modules.

events.py   what an incoming VTEX event means for an order (called while the event is stored)
process.py  one order, claimed by one worker: get order, send to ERP, start handling, cancel notice
dispatch.py the loop that hands due orders to a pool of worker threads
backoff.py  when to try again
"""
