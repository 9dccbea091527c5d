"""Dataset registrations with random columns, types, sensitivities and masks, then an upload, a PATCH, and reads as admin and as anonymous on every path.

Usage (through run.sh, which starts the gateway): registrations.py SEED COUNT. A finding is a 5xx
(but 503/504), a 4xx that is not problem+json, or what the script checks besides."""
import json, random, sys, http.client
seed=int(sys.argv[1]); N=int(sys.argv[2]); random.seed(seed)
from common import ADMIN, finish, request
def req(method, path, body=None, key=ADMIN, ct="application/json"):
    return request(method,path,body,key,ct)
types=["utf8","int32","int64","float64","boolean","date32","timestamp(us)","decimal128(5,2)","decimal128(38,10)","decimal128(1,0)","decimal128(38,38)","decimal128(0,0)","decimal128(39,2)","decimal128(5,6)","timestamp(ns)","timestamp(ms)","int8","utf8view","largeutf8","float32","list(int64)","", "UTF8","Int64"," int64","decimal128(5, 2)","timestamp(us, UTC)"]
masks=["hash","redact","partial","year","null","",None,"nope"]
sens=["public","masked","private","",None,"secret"]
vals={"utf8":lambda:random.choice(["a","中文","",'x"y',"2024-05-01","1"]),"int32":lambda:random.choice(["1","-5","2147483647"]),"int64":lambda:random.choice(["1","-9","9223372036854775807"]),
 "float64":lambda:random.choice(["1.5","-0","1e300","NaN","inf"]),"boolean":lambda:random.choice(["true","false"]),"date32":lambda:random.choice(["2024-01-31","1970-01-01","9999-12-31"]),
 "timestamp(us)":lambda:random.choice(["2024-01-01T00:00:00","2024-01-01 12:00:00","1900-01-01T00:00:00Z"]),"decimal128(5,2)":lambda:random.choice(["1.25","-999.99","0"]),
 "decimal128(38,10)":lambda:random.choice(["1.0000000001","-12345678901234567890.5"]),"decimal128(1,0)":lambda:random.choice(["1","-9"]),"decimal128(38,38)":lambda:random.choice(["0.1","-0.99999"])}
bad=[]; stats={}
def chk(tag,st,ct,d):
    stats[(tag,st)]=stats.get((tag,st),0)+1
    if st>=500 and st not in (503,): bad.append((tag,st,d[:300]))
    elif st>=400 and "problem+json" not in ct: bad.append((tag,st,"ct",ct))
for it in range(N):
    n=random.randint(0,6); cols=[]
    for i in range(n):
        c={"name":random.choice(["id","name","a","b","c","日期","x y","","A","Select","id"]) if random.random()<.08 else f"c{i}","type":random.choice(types) if random.random()<.12 else random.choice(list(vals))}
        if random.random()<.5: c["sensitivity"]=random.choice(sens[:3])
        if random.random()<.5: c["mask"]=random.choice(masks[:5])
        if random.random()<.1: c["description"]="d"*random.choice([1,10000])
        if random.random()<.01: del c["type"]
        cols.append(c)
    name=f"r{seed}_{it}" if random.random()<.9 else random.choice(["","Bad","a"*200,"ok-name","x.y","../x"])
    b={"department":random.choice(["transport"]*9+["nope",""]),"name":name,"title":random.choice(["t","","中"*1000]),"access_level":random.choice(["open"]*6+["conditional","shared","x"]),
       "license":"CC-BY-4.0","tags":random.choice([[],["a"],["x"]*50,"notalist"]),"update_frequency":random.choice(["daily","x"])}
    if cols or random.random()<.5: b["columns"]=cols
    if random.random()<.5: b["primary_key"]=random.choice([["c0"],["c0","c1"],["nope"],[],["id"],"c0"])
    st,ct,d=req("POST","/api/v1/datasets",json.dumps(b)); chk("register",st,ct,d)
    if st!=201: continue
    # upload a CSV matching declared columns (or a free one)
    names=[c["name"] for c in cols]
    if cols:
        hdr=",".join(names)
        rows=[",".join(vals.get(c.get("type"),lambda:"1")() for c in cols) for _ in range(random.randint(1,5))]
    else:
        hdr="id,name,when"; rows=[f"{i},n{i},2024-01-0{1+i%9}" for i in range(5)]
    csv=hdr+"\n"+"\n".join(rows)+"\n"
    st,ct,d=req("POST",f"/api/v1/datasets/transport/{name}/versions",csv.encode(),ct="text/csv"); chk("upload",st,ct,d)
    ok=st==201
    # patch with junk
    patch=random.choice([{"title":"new"},{"access_level":random.choice(["open","conditional","shared","x"])},{"columns":[{"name":random.choice(names or ["id"]),"sensitivity":random.choice(sens),"mask":random.choice(masks)}]},{"primary_key":["nope"]},{"tags":None},{}])
    st,ct,d=req("PATCH",f"/api/v1/datasets/transport/{name}",json.dumps(patch)); chk("patch",st,ct,d)
    for key in (ADMIN,None):
        for path in (f"/api/v1/datasets/transport/{name}",f"/api/v1/datasets/transport/{name}/rows?limit=5",f"/api/v1/datasets/transport/{name}/rows?limit=5&format=csv",
                     f"/api/v1/datasets/transport/{name}/export?format=parquet",f"/api/v1/datasets/transport/{name}/export?format=arrow","/catalog/data.json"):
            st,ct,d=req("GET",path,key=key); chk("get",st,ct,d)
        qcols=",".join('"'+x.replace('"','""')+'"' for x in names[:3]) or "*"
        st,ct,d=req("POST","/api/v1/query",json.dumps({"sql":f'SELECT {qcols} FROM transport."{name}" ORDER BY 1 LIMIT 3'}),key=key); chk("query",st,ct,d)
        if ok and key==ADMIN and st!=200: bad.append(("admin query",st,d[:200]))
print("answers:", sorted(stats.items()))
finish(bad)
