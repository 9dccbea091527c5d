"""SQL with $n parameters of every JSON type (huge integers, nested values, far dates).

Usage (through run.sh, which starts the gateway): params.py SEED COUNT. A finding is a 5xx
(but 503/504), a 4xx that is not problem+json, or what the script checks besides."""
import json, random, sys, http.client
random.seed(int(sys.argv[1])); N=int(sys.argv[2])
from common import ADMIN, finish, request
req=request
cols={"transport.bus_lines":["line_id","stop_count","fare","night_line","opened"],"market.market_entities":None,"environment.air_quality":None}
vals=[1,-1,0,2**63-1,2**63,-2**63-1,1.5,1e308,float("inf") if False else 1e-308,"a","","2024-01-01","2024-01-01T00:00:00Z","9999-12-31",True,False,None,[1],{"a":1},[],"1e5","NaN","'; DROP","\u0000","中文"*1000,12345678901234567890123]
tmpl=["SELECT * FROM transport.bus_lines WHERE stop_count = $1","SELECT * FROM transport.bus_lines WHERE fare > $1 LIMIT 5","SELECT $1","SELECT $1 + 1","SELECT $1, $2","SELECT * FROM transport.bus_lines WHERE line_id IN ($1, $2)","SELECT * FROM transport.bus_lines LIMIT $1","SELECT * FROM transport.bus_lines WHERE opened > $1","SELECT CAST($1 AS DATE)","SELECT date_trunc('year', $1)","SELECT $1::timestamp","SELECT * FROM transport.bus_lines OFFSET $1","SELECT substr(line_id, $1, $2) FROM transport.bus_lines","SELECT $3","SELECT * FROM transport.bus_lines WHERE night_line = $1","SELECT make_date($1,$2,1)","SELECT repeat('x', $1)","SELECT * FROM generate_series(1, $1)","SELECT to_timestamp($1)","SELECT arrow_cast($1, 'Int8')","SELECT date_part('year', $1::date)","SELECT to_date($1)","SELECT CAST($1 AS TIMESTAMP)","SELECT date_trunc('year', CAST($1 AS TIMESTAMP))"]
bad=[]; stats={}
for i in range(N):
    sql=random.choice(tmpl); n=random.randint(0,3)
    params=[random.choice(vals) for _ in range(n)] if random.random()<.9 else random.choice([{},"x",None,[[1,2]]])
    body={"sql":sql,"params":params}
    if random.random()<.3: body["format"]=random.choice(["json","csv","ndjson","arrow","parquet"])
    key=random.choice([None,ADMIN])
    st,ct,d=req("POST","/api/v1/query",json.dumps(body),key)
    stats[st]=stats.get(st,0)+1
    if st>=500 and st not in (503,504): bad.append((sql,params,st,d[:250]))
    elif st>=400 and "problem+json" not in ct: bad.append((sql,params,st,"ct"))
print("answers:", sorted(stats.items()))
finish(bad)
