"""The PostgreSQL side of authsvc, by concern; authsvc.store puts the queries together behind one Store."""
