"""Applications, grants and keys in random order by every role: approve twice, reject after approval, revoke unknown grants, read with revoked keys.

Usage (through run.sh, which starts the gateway): applications.py SEED COUNT. A finding is a 5xx
(but 503/504), a 4xx that is not problem+json, or what the script checks besides."""
import json, random, sys, http.client
random.seed(int(sys.argv[1])); N=int(sys.argv[2])
from common import ADMIN, finish, request
def req(method, path, body=None, key=ADMIN):
    st,ct,d=request(method,path,json.dumps(body) if body is not None and not isinstance(body,str) else body,key)
    try: j=json.loads(d)
    except Exception: j=d
    return st, ct, j
bad=[]; stats={}
def chk(tag,st,ct,j):
    stats[(tag,st)]=stats.get((tag,st),0)+1
    if st>=500: bad.append((tag,st,str(j)[:200]))
    elif st>=400 and "problem+json" not in ct: bad.append((tag,st,"ct"))
keys=[]
for role,dept in [("consumer",None),("consumer",None),("publisher","justice"),("publisher","transport"),("auditor",None)]:
    b={"name":"k","role":role}
    if dept: b["department"]=dept
    if random.random()<.3: b["expires_at"]=random.choice(["2030-01-01T00:00:00Z","2020-01-01T00:00:00Z","x","2030-01-01"])
    if random.random()<.3: b["tier"]=random.choice(["anonymous","registered","partner","nope"])
    st,ct,j=req("POST","/api/v1/keys",b); chk("key",st,ct,j)
    if st==201: keys.append((role,dept,j["key"],j["id"]))
apps=[]; grants=[]
cond=["justice/legal_aid_cases","justice/mediation_cases","transport/bus_lines","nope/nope"]
for i in range(N):
    k=random.randrange(10)
    who=random.choice(keys+[("admin",None,ADMIN,None),("anon",None,None,None)])
    if k<3:
        d=random.choice(cond)
        st,ct,j=req("POST",f"/api/v1/datasets/{d}/applications",random.choice([{"purpose":"research"},{"purpose":""},{},{"purpose":"x"*100000},"nope",{"purpose":1}]),who[2]); chk("apply",st,ct,j)
        if st==201: apps.append(j["id"])
    elif k<5 and apps:
        a=random.choice(apps+["nope","00000000-0000-0000-0000-000000000000"])
        st,ct,j=req("POST",f"/api/v1/applications/{a}/approve",random.choice([{},{"expires_at":"2030-01-01T00:00:00Z"},{"expires_at":"2000-01-01T00:00:00Z"},{"expires_at":"x"},None]),who[2]); chk("approve",st,ct,j)
        if st in (200,201) and isinstance(j,dict) and "id" in j: grants.append(j["id"])
    elif k<6 and apps:
        a=random.choice(apps)
        st,ct,j=req("POST",f"/api/v1/applications/{a}/reject",random.choice([{"reason":"no"},{},None]),who[2]); chk("reject",st,ct,j)
    elif k<7:
        st,ct,j=req("GET","/api/v1/applications?"+random.choice(["","status=pending","status=approved","status=x"]),None,who[2]) if False else req("GET","/api/v1/applications?"+random.choice(["","status=pending","status=approved","status=x"]),None,who[2]); chk("list",st,ct,j)
    elif k<8:
        g=random.choice(grants+["nope","1"]) if grants else "nope"
        st,ct,j=req("DELETE",f"/api/v1/grants/{g}",None,who[2]); chk("revoke",st,ct,j)
    elif k<9:
        st,ct,j=req("GET","/api/v1/grants",None,who[2]); chk("grants",st,ct,j)
        st,ct,j=req("GET","/api/v1/me",None,who[2]); chk("me",st,ct,j)
    else:
        st,ct,j=req("GET","/api/v1/datasets/justice/legal_aid_cases/rows?limit=2",None,who[2]); chk("read",st,ct,j)
        if random.random()<.05 and who[3]:
            st,ct,j=req("DELETE",f"/api/v1/keys/{who[3]}"); chk("revokekey",st,ct,j)
print("answers:", sorted(stats.items()))
finish(bad)
