"""Uploads of CSV, NDJSON, Parquet and Arrow bodies with bytes flipped, cut, inserted, zeroed, gzip-wrapped, appended or replacing: a refusal leaves the dataset as it was; an accepted version reads back whole (count, page, export).

Usage (through run.sh, which starts the gateway): uploads.py SEED COUNT. A finding is a 5xx
(but 503/504), a 4xx that is not problem+json, or what the script checks besides."""
import json, random, sys, gzip, io, http.client, time
import pyarrow as pa, pyarrow.parquet as pq, pyarrow.csv as pacsv, pyarrow.ipc as ipc, decimal, datetime
seed=int(sys.argv[1]) if len(sys.argv)>1 else 1
N=int(sys.argv[2]) if len(sys.argv)>2 else 300
random.seed(seed)
from common import ADMIN, finish, request
def req(method, path, body=None, hdrs=None, key=ADMIN):
    hdrs=dict(hdrs or {})
    return request(method,path,body,key,hdrs.pop("content-type","application/json"),hdrs)
def j(method,path,obj=None):
    st,ct,d=req(method,path,json.dumps(obj).encode() if obj is not None else None,{"content-type":"application/json"})
    return st, (json.loads(d) if d and "json" in ct else d)
tag=f"fz{seed}"
cols=[{"name":"id","type":"int64"},{"name":"name","type":"utf8"},{"name":"opened","type":"date32"},
      {"name":"fare","type":"decimal128(5,2)"},{"name":"ts","type":"timestamp(us)"},{"name":"x","type":"float64"},{"name":"ok","type":"boolean"}]
for nm,c in ((tag+"_decl",cols),(tag+"_free",None)):
    body={"department":"transport","name":nm,"title":"t","access_level":"open","license":"CC-BY-4.0","tags":[],"update_frequency":"daily"}
    if c: body["columns"]=c; body["primary_key"]=["id"]
    st,b=j("POST","/api/v1/datasets",body); assert st==201,(st,b)
def table(n, start):
    ids=list(range(start,start+n))
    return pa.table({"id":pa.array(ids,pa.int64()),
        "name":pa.array([random.choice(["站点","a,b",'q"x',"","line\nbreak","ü"])+str(i) for i in ids]),
        "opened":pa.array([datetime.date(2020,1,1)+datetime.timedelta(days=i%900) for i in ids],pa.date32()),
        "fare":pa.array([decimal.Decimal(i%999)/100 for i in ids],pa.decimal128(5,2)),
        "ts":pa.array([datetime.datetime(2024,1,1)+datetime.timedelta(seconds=i) for i in ids],pa.timestamp("us")),
        "x":pa.array([i*0.5 for i in ids]),"ok":pa.array([i%2==0 for i in ids])})
def enc(t, fmt):
    b=io.BytesIO()
    if fmt=="csv": pacsv.write_csv(t,b)
    elif fmt=="ndjson":
        for r in t.to_pylist():
            b.write((json.dumps({k:(str(v) if isinstance(v,(decimal.Decimal,datetime.date,datetime.datetime)) else v) for k,v in r.items()},ensure_ascii=False)+"\n").encode())
    elif fmt=="parquet": pq.write_table(t,b,row_group_size=random.choice([7,100,1000]),compression=random.choice(["zstd","snappy","none","gzip"]))
    elif fmt=="arrow":
        w=ipc.new_stream(b,t.schema); [w.write_batch(x) for x in t.to_batches(max_chunksize=random.choice([5,50,500]))]; w.close()
    return b.getvalue()
CT={"csv":"text/csv","ndjson":"application/x-ndjson","parquet":"application/vnd.apache.parquet","arrow":"application/vnd.apache.arrow.stream"}
def mutate(b):
    b=bytearray(b); k=random.choice(["flip","trunc","insert","delete","dup","zero","none","many"])
    if not b: return bytes(b),k
    if k=="flip" or k=="many":
        for _ in range(1 if k=="flip" else random.randint(2,50)):
            i=random.randrange(len(b)); b[i]^=1<<random.randrange(8)
    elif k=="trunc": b=b[:random.randrange(len(b))]
    elif k=="insert":
        i=random.randrange(len(b)); b[i:i]=bytes(random.randrange(256) for _ in range(random.randint(1,20)))
    elif k=="delete":
        i=random.randrange(len(b)); del b[i:i+random.randint(1,64)]
    elif k=="dup":
        i=random.randrange(len(b)); l=random.randint(1,200); b[i:i]=b[i:i+l]
    elif k=="zero":
        i=random.randrange(len(b)); l=random.randint(1,100); b[i:i+l]=bytes(min(l,len(b)-i))
    return bytes(b),k
bad=[]; stats={}
def state(nm):
    st,v=j("GET",f"/api/v1/datasets/transport/{nm}/versions"); assert st==200,(st,v)
    st2,d=j("GET",f"/api/v1/datasets/transport/{nm}"); return v, d.get("row_count")
nid=0
for it in range(N):
    nm=random.choice([tag+"_decl",tag+"_free"]); fmt=random.choice(list(CT))
    n=random.choice([1,3,20,300]); t=table(n,nid); nid+=n
    body=enc(t,fmt); body,k=mutate(body)
    hdr={"content-type":CT[fmt] if random.random()<0.9 else random.choice(list(CT.values()))}
    if random.random()<0.2:
        body=gzip.compress(body); hdr["content-encoding"]="gzip"
        if random.random()<0.3: body,k2=mutate(body); k+="+gz"+k2
    mode=random.choice(["append","append","replace"])
    before=state(nm)
    try: st,ct,d=req("POST",f"/api/v1/datasets/transport/{nm}/versions?mode={mode}",body,hdr)
    except Exception as e: bad.append((it,fmt,k,"EXC",repr(e))); break
    stats[(fmt,st)]=stats.get((fmt,st),0)+1
    after=state(nm)
    if st>=500: bad.append((it,fmt,k,st,d[:300]))
    elif st!=201:
        if "problem+json" not in ct: bad.append((it,fmt,k,st,"ct",ct))
        else:
            p=json.loads(d)
            if p.get("status")!=st: bad.append((it,fmt,k,"status mismatch"))
        if after!=before: bad.append((it,fmt,k,st,"state changed",before,after))
    else:
        r=json.loads(d)
        if len(after[0])!=len(before[0])+1: bad.append((it,fmt,k,"no new version"))
        if after[1]!=r["row_count"]: bad.append((it,fmt,k,"row_count",after[1],r))
        s2,c2,d2=req("POST","/api/v1/query",json.dumps({"sql":f"SELECT count(*) AS n FROM transport.{nm}"}).encode(),{"content-type":"application/json"})
        if s2!=200: bad.append((it,fmt,k,"query",s2,d2[:300]))
        else:
            try:
                n2=json.loads(d2)["rows"][0]["n"]
                if n2!=r["row_count"]: bad.append((it,fmt,k,"count",n2,r["row_count"]))
            except Exception as e: bad.append((it,fmt,k,"qparse",d2[:200]))
        s3,c3,d3=req("GET",f"/api/v1/datasets/transport/{nm}/rows?limit=50")
        if s3!=200: bad.append((it,fmt,k,"rows",s3,d3[:300]))
        s4,c4,d4=req("GET",f"/api/v1/datasets/transport/{nm}/export?format=parquet")
        if s4!=200: bad.append((it,fmt,k,"export",s4,d4[:300]))
print("answers:", sorted(stats.items()))
finish(bad)
