"""Scale-out: node hosts on Ray (optional extra ``shoal[ray]``)."""
