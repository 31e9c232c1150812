"""Extract libtensorflow's shared objects and C API headers from PyPI's tensorflow-cpu wheel.

    python extract_libtensorflow.py WHEEL OUT LIBS_JSON HEADER_DIRS_JSON

Writes OUT/lib/<the .so files>, OUT/include/<the headers under the given folders> and
OUT/stamp.json with the libraries' sizes and the header count (setup checks them). Run by
scripts/setup/native_backend.ts; only the standard library is used.
"""
import json, os, sys, zipfile
wheel, out, libs, dirs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
sizes, headers = {}, 0
with zipfile.ZipFile(wheel) as z:
    for info in z.infolist():
        name = info.filename
        if name.startswith("tensorflow/") and name[len("tensorflow/"):] in libs:
            target = os.path.join(out, "lib", os.path.basename(name))
        elif name.startswith("tensorflow/include/") and any(name[len("tensorflow/include/"):].startswith(d) for d in dirs):
            target = os.path.join(out, "include", name[len("tensorflow/include/"):])
            headers += 1
        else:
            continue
        if name.endswith("/"):
            continue
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with z.open(info) as src, open(target, "wb") as dst:
            while True:
                chunk = src.read(1 << 20)
                if not chunk:
                    break
                dst.write(chunk)
        if target.endswith(".so.2"):
            sizes[os.path.basename(target)] = os.path.getsize(target)
missing = [l for l in libs if l not in sizes]
if missing:
    sys.exit("wheel lacks " + ", ".join(missing))
json.dump({"sizes": sizes, "headers": headers}, open(os.path.join(out, "stamp.json"), "w"))
