"""The Flight SQL listener: commands of every type with valid and garbled payloads, junk tickets, actions and DoPut descriptors, with and without keys. A finding is Internal, Unknown or a reset stream.

Usage (through run.sh, which starts the gateway): flight.py SEED COUNT. A finding is a 5xx
(but 503/504), a 4xx that is not problem+json, or what the script checks besides."""
import random, sys, os, pyarrow as pa, pyarrow.flight as fl
seed=int(sys.argv[1]); N=int(sys.argv[2]); random.seed(seed)
from common import ADMIN, FLIGHT, finish
def varint(n):
    out=b""
    n&=(1<<64)-1
    while True:
        b=n&0x7f; n>>=7
        if n: out+=bytes([b|0x80])
        else: return out+bytes([b])
def ld(field, data): 
    if isinstance(data,str): data=data.encode()
    return varint(field<<3|2)+varint(len(data))+data
def vi(field, n): return varint(field<<3|0)+varint(n)
def anymsg(tn, payload): return ld(1,"type.googleapis.com/arrow.flight.protocol.sql."+tn)+ld(2,payload)
sqls=["SELECT 1","SELECT * FROM transport.bus_lines LIMIT 3","SELECT * FROM justice.legal_aid_cases LIMIT 2","select","DROP TABLE x","SELECT $1","SELECT * FROM nope.nope","SELECT 1/0","INSERT INTO transport.bus_lines VALUES (1)","SELECT repeat('x', 100000000)","", "SELECT * FROM audit.events LIMIT 1","SELECT '\x00'","SELECT * FROM transport.bus_lines WHERE stop_count = $1"]
def junk(): return os.urandom(random.choice([0,1,5,40,300]))
def rstr(): return random.choice(sqls+["%","transport","datagate","","x"*10000,"ü"])
def cmd():
    k=random.randrange(20)
    if k==0: return anymsg("CommandStatementQuery", ld(1,rstr()) + (ld(2,junk()) if random.random()<.2 else b""))
    if k==1: return anymsg("CommandPreparedStatementQuery", ld(1,junk()))
    if k==2: return anymsg("CommandGetCatalogs", b"")
    if k==3: return anymsg("CommandGetDbSchemas", ld(1,rstr())*random.randint(0,1)+ld(2,rstr())*random.randint(0,1))
    if k==4: return anymsg("CommandGetTables", ld(1,rstr())*random.randint(0,1)+ld(2,rstr())*random.randint(0,1)+ld(3,rstr())*random.randint(0,1)+ld(4,random.choice(["TABLE","VIEW","x"]))*random.randint(0,2)+vi(5,random.randint(0,1)))
    if k==5: return anymsg("CommandGetTableTypes", b"")
    if k==6: return anymsg("CommandGetSqlInfo", b"".join(vi(1,random.choice([0,1,2,3,4,500,501,4294967295,9999,10**12])) for _ in range(random.randint(0,5))))
    if k==7: return anymsg(random.choice(["CommandGetPrimaryKeys","CommandGetExportedKeys","CommandGetImportedKeys"]), ld(3,rstr())+ld(1,rstr())*random.randint(0,1))
    if k==8: return anymsg("CommandGetCrossReference", ld(3,rstr())+ld(6,rstr()))
    if k==9: return anymsg("CommandGetXdbcTypeInfo", vi(1,random.choice([0,1,12,-5 & 0xffffffff,2**40]))*random.randint(0,1))
    if k==10: return anymsg(random.choice(["CommandStatementUpdate","CommandStatementSubstraitPlan","CommandStatementIngest","CommandPreparedStatementUpdate"]), ld(1,rstr()))
    if k==11: return anymsg("TicketStatementQuery", ld(1,junk()))
    if k==12: return ld(1,"type.googleapis.com/"+random.choice(["x","","google.protobuf.Empty","arrow.flight.protocol.sql.Nope"]))+ld(2,junk())
    if k==13: return junk()
    if k==14: # valid type with junk payload
        return anymsg(random.choice(["CommandStatementQuery","CommandGetTables","CommandGetSqlInfo","CommandGetDbSchemas","CommandPreparedStatementQuery","TicketStatementQuery"]), junk())
    return anymsg("CommandStatementQuery", ld(1,random.choice(sqls)))
def action():
    t=random.choice(["CreatePreparedStatement","ClosePreparedStatement","BeginTransaction","EndTransaction","CancelQuery","CancelFlightInfo","RenewFlightEndpoint","CreatePreparedSubstraitPlan","BeginSavepoint","EndSavepoint","","nope","x"*300])
    if t=="CreatePreparedStatement" and random.random()<.7: body=anymsg("ActionCreatePreparedStatementRequest", ld(1,rstr()))
    elif t=="ClosePreparedStatement" and random.random()<.7: body=anymsg("ActionClosePreparedStatementRequest", ld(1,junk()))
    else: body=random.choice([junk(), cmd()])
    return fl.Action(t, body)
loc=FLIGHT
bad=[]; stats={}
def opts(key):
    return fl.FlightCallOptions(headers=[(b"authorization", b"Bearer "+key.encode())] if key else [], timeout=60)
for it in range(N):
    key=random.choice([None,ADMIN,"dg_bad_"+"c"*64,"junk"])
    c=fl.connect(loc)
    rpc=random.choice(["info","get","action","put","schema","list","info_get"])
    try:
        if rpc=="info":
            c.get_flight_info(fl.FlightDescriptor.for_command(cmd()), opts(key))
        elif rpc=="info_get":
            i=c.get_flight_info(fl.FlightDescriptor.for_command(cmd()), opts(key))
            for e in i.endpoints: c.do_get(e.ticket, opts(key)).read_all()
        elif rpc=="get":
            c.do_get(fl.Ticket(random.choice([junk(),cmd()])), opts(key)).read_all()
        elif rpc=="action":
            list(c.do_action(action(), opts(key)))
        elif rpc=="schema":
            c.get_schema(fl.FlightDescriptor.for_command(cmd()), opts(key))
        elif rpc=="list":
            list(c.list_flights(random.choice([b"",junk()]), opts(key)))
        else:
            t=pa.table({"$1":pa.array([1,2],pa.int64())})
            w,r=c.do_put(fl.FlightDescriptor.for_command(cmd()), t.schema, opts(key))
            w.write_table(t); w.done_writing(); r.read(); w.close()
        res="ok"
    except Exception as e:
        res=type(e).__name__
        msg=str(e)[:200]
        if res=="OSError": res="OSError: "+msg[:60]
        if res in ("FlightServerError","FlightInternalError","FlightCancelledError","FlightUnavailableError","ArrowException","FlightError") or "Internal" in msg[:60]:
            bad.append((it,rpc,key and key[:8],res,msg))
    stats[(rpc,res)]=stats.get((rpc,res),0)+1
    c.close()
print("answers:", sorted(stats.items()))
finish(bad)
