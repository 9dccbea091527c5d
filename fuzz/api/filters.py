"""where= filters of the rows page and exports over every open dataset, with literals of every type against columns of every type.

Usage (through run.sh, which starts the gateway): filters.py SEED COUNT. A finding is a 5xx
(but 503/504), a 4xx that is not problem+json, or what the script checks besides."""
import json, random, sys, http.client, urllib.parse
random.seed(int(sys.argv[1])); N=int(sys.argv[2])
from common import ADMIN, finish, request
def get(path):
    return request("GET",path,key=None)
st,_,d=get("/api/v1/datasets?limit=100"); ds=json.loads(d)
ds=ds.get("datasets",ds.get("items",ds)) if isinstance(ds,dict) else ds
targets=[]
for x in ds:
    st,_,d=get(f"/api/v1/datasets/{x['department']}/{x['name']}")
    j=json.loads(d)
    if j.get("access_level")=="open" and j["schema"]: targets.append((x['department'],x['name'],[(c['name'],c['type']) for c in j['schema']]))
lits=["1","-1","0","1.5","1e400","-9223372036854775809","9223372036854775807","'a'","'2024-01-01'","'9999-12-31'","'2024-13-45'","DATE '2024-01-01'","TIMESTAMP '2024-01-01 00:00:00'","true","NULL","'中文'","''","'%'","'1'","x'00'","'NaN'","NaN","-0","0.0000000000000000000001","99999999999999999999999999999999999999999"]
ops=["=","<>","!=","<",">","<=",">="]
def atom(cols):
    c,t=random.choice(cols); k=random.randrange(6)
    if k==0: return f"{c} {random.choice(ops)} {random.choice(lits)}"
    if k==1: return f"{c} IN ({random.choice(lits)}, {random.choice(lits)})"
    if k==2: return f"{c} BETWEEN {random.choice(lits)} AND {random.choice(lits)}"
    if k==3: return f"{c} LIKE {random.choice(lits)}"
    if k==4: return f"{c} IS {random.choice(['NULL','NOT NULL'])}"
    return f"NOT ({c} {random.choice(ops)} {random.choice(lits)})"
bad=[]; stats={}
for i in range(N):
    d,n,cols=random.choice(targets)
    w=atom(cols)
    for _ in range(random.randint(0,2)): w=f"{w} {random.choice(['AND','OR'])} {atom(cols)}"
    q={"where":w,"limit":random.choice(["1","10"])}
    if random.random()<.3: q["order"]=random.choice(cols)[0]+random.choice([""," desc"])
    if random.random()<.2: q["format"]=random.choice(["csv","ndjson","arrow"])
    path=random.choice(["rows","export"])
    st,ct,body=get(f"/api/v1/datasets/{d}/{n}/{path}?"+urllib.parse.urlencode(q))
    stats[st]=stats.get(st,0)+1
    if st>=500: bad.append((d,n,path,w,st,body[:200]))
    elif st>=400 and "problem+json" not in ct: bad.append((w,st,"ct"))
print("answers:", sorted(stats.items()))
finish(bad)
