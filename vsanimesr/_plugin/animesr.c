/*
 * core.animesr.Upscale: a small native VapourSynth filter that hands frames to the Python engine.
 *
 * Why native: VapourSynth namespaces belong to native plugins, and only a native filter can control its frame
 * requests. AnimeSR is recurrent, so output frame n depends on a window of input frames [lo, hi] (see
 * window_of); the Python side (vsanimesr._vsbridge) owns the engine and its recurrent state.
 *
 * Threading model (see ../shared notes): fmParallelRequests, so arInitial may run on several threads at once
 * while arAllFramesReady is serialised per instance but NOT ordered. The engine result is a deterministic
 * function of the window, so order only affects speed, never pixels.
 *
 * A private ring of source-frame references keeps the recent window alive: arInitial requests only the frames
 * the ring does not hold, and takes its own references to the held ones so they cannot be evicted under it.
 *
 * Python is not linked: Py* functions are resolved from the host (python or vspipe). A host without Python can
 * still load the plugin; Upscale then reports that it needs Python. Only *function* symbols of libpython are
 * referenced (no Py_None, no PyExc_*), because unresolved data symbols would make the plugin fail to load.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "VapourSynth4.h"

#define PLUGIN_ID "com.github.vsanimesr.animesr"
#define ERR_PREFIX "animesr.Upscale: "

static const VSAPI *g_vsapi = NULL;

/* ------------------------------------------------------------------------------------------------ */
/* Python availability                                                                              */

static int python_available(void) {
    /* Function pointers looked up at run time, so this works without libpython in the host. */
    int (*is_init)(void) = (int (*)(void))dlsym(RTLD_DEFAULT, "Py_IsInitialized");
    return is_init != NULL && is_init();
}

/* Exception types, fetched from builtins once (PyExc_* are data symbols: see the header comment). */
static PyObject *g_IndexError = NULL, *g_BufferError = NULL;
static PyTypeObject *g_PlaneType = NULL, *g_WindowType = NULL;

static PyObject *new_none(void) { return Py_BuildValue(""); }

/* ------------------------------------------------------------------------------------------------ */
/* Plane: a read-only 2-D buffer over one plane of a VSFrame, holding its own frame reference.      */

typedef struct {
    PyObject_HEAD
    const VSFrame *frame;
    const uint8_t *ptr;
    Py_ssize_t shape[2];
    Py_ssize_t strides[2];
    int itemsize;
} PlaneObject;

static void Plane_dealloc(PyObject *self) {
    PlaneObject *p = (PlaneObject *)self;
    PyTypeObject *tp = Py_TYPE(self);
    if (p->frame)
        g_vsapi->freeFrame(p->frame);
    freefunc tp_free = (freefunc)PyType_GetSlot(tp, Py_tp_free);
    tp_free(self);
    Py_DECREF(tp);
}

static int Plane_getbuffer(PyObject *self, Py_buffer *view, int flags) {
    PlaneObject *p = (PlaneObject *)self;
    if (flags & PyBUF_WRITABLE) {
        PyErr_SetString(g_BufferError, "animesr: source planes are read-only");
        view->obj = NULL;
        return -1;
    }
    int contiguous = p->strides[0] == p->shape[1] * p->itemsize;
    if (!(flags & PyBUF_STRIDES) && !contiguous) {
        PyErr_SetString(g_BufferError, "animesr: source plane rows are padded; request a strided buffer");
        view->obj = NULL;
        return -1;
    }
    view->obj = self;
    Py_INCREF(self);
    view->buf = (void *)p->ptr;
    view->len = p->shape[0] * p->shape[1] * p->itemsize;
    view->readonly = 1;
    view->itemsize = p->itemsize;
    view->format = (flags & PyBUF_FORMAT) ? (p->itemsize == 4 ? "f" : "e") : NULL;
    view->ndim = 2;
    view->shape = (flags & PyBUF_ND) ? p->shape : NULL;
    view->strides = (flags & PyBUF_STRIDES) ? p->strides : NULL;
    view->suboffsets = NULL;
    view->internal = NULL;
    return 0;
}

static void Plane_releasebuffer(PyObject *self, Py_buffer *view) {
    (void)self;
    (void)view;
}

static PyType_Slot Plane_slots[] = {
    {Py_tp_dealloc, (void *)Plane_dealloc},
    {Py_bf_getbuffer, (void *)Plane_getbuffer},
    {Py_bf_releasebuffer, (void *)Plane_releasebuffer},
    {Py_tp_doc, (void *)"One read-only plane of a source frame (float32 or float16), usable with numpy.asarray."},
    {0, NULL},
};
static PyType_Spec Plane_spec = {"vsanimesr._plugin.Plane", sizeof(PlaneObject), 0, Py_TPFLAGS_DEFAULT,
                                 Plane_slots};

static PyObject *make_plane(const VSFrame *f, int plane) {
    PlaneObject *p = (PlaneObject *)PyType_GenericAlloc(g_PlaneType, 0);
    if (!p)
        return NULL;
    p->frame = g_vsapi->addFrameRef(f);
    p->ptr = g_vsapi->getReadPtr(f, plane);
    p->itemsize = g_vsapi->getVideoFrameFormat(f)->bytesPerSample;
    p->shape[0] = g_vsapi->getFrameHeight(f, plane);
    p->shape[1] = g_vsapi->getFrameWidth(f, plane);
    p->strides[0] = (Py_ssize_t)g_vsapi->getStride(f, plane);
    p->strides[1] = p->itemsize;
    return (PyObject *)p;
}

/* ------------------------------------------------------------------------------------------------ */
/* Window: the source frames [lo, hi] for one output frame. Calling it with k gives (R, G, B) planes. */

typedef struct {
    PyObject_HEAD
    const VSFrame **frames; /* owned references, hi - lo + 1 of them */
    int lo, hi;
} WindowObject;

static void Window_dealloc(PyObject *self) {
    WindowObject *w = (WindowObject *)self;
    PyTypeObject *tp = Py_TYPE(self);
    if (w->frames) {
        for (int i = 0; i <= w->hi - w->lo; i++)
            if (w->frames[i])
                g_vsapi->freeFrame(w->frames[i]);
        free(w->frames);
    }
    freefunc tp_free = (freefunc)PyType_GetSlot(tp, Py_tp_free);
    tp_free(self);
    Py_DECREF(tp);
}

static const VSFrame *window_frame(WindowObject *w, PyObject *args) {
    int k;
    if (!PyArg_ParseTuple(args, "i", &k))
        return NULL;
    if (k < w->lo || k > w->hi) {
        PyErr_Format(g_IndexError, "animesr: frame %d is outside the requested window [%d, %d]", k, w->lo, w->hi);
        return NULL;
    }
    return w->frames[k - w->lo];
}

static PyObject *Window_call(PyObject *self, PyObject *args, PyObject *kwargs) {
    (void)kwargs;
    const VSFrame *f = window_frame((WindowObject *)self, args);
    if (!f)
        return NULL;
    PyObject *r = make_plane(f, 0), *g = make_plane(f, 1), *b = make_plane(f, 2);
    if (!r || !g || !b) {
        Py_XDECREF(r);
        Py_XDECREF(g);
        Py_XDECREF(b);
        return NULL;
    }
    PyObject *t = PyTuple_Pack(3, r, g, b);
    Py_DECREF(r);
    Py_DECREF(g);
    Py_DECREF(b);
    return t;
}

static PyObject *Window_scene_change(PyObject *self, PyObject *args) {
    const VSFrame *f = window_frame((WindowObject *)self, args);
    if (!f)
        return NULL;
    int err = 0;
    int64_t v = g_vsapi->mapGetInt(g_vsapi->getFramePropertiesRO(f), "_SceneChangePrev", 0, &err);
    if (err)
        return new_none();
    return PyBool_FromLong(v != 0);
}

static PyMethodDef Window_methods[] = {
    {"scene_change", Window_scene_change, METH_VARARGS,
     "scene_change(k) -> bool | None: the _SceneChangePrev property of source frame k (None when absent)."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot Window_slots[] = {
    {Py_tp_dealloc, (void *)Window_dealloc},
    {Py_tp_call, (void *)Window_call},
    {Py_tp_methods, (void *)Window_methods},
    {Py_tp_doc, (void *)"window(k) -> (R, G, B) read-only planes of source frame k, for lo <= k <= hi."},
    {0, NULL},
};
static PyType_Spec Window_spec = {"vsanimesr._plugin.Window", sizeof(WindowObject), 0, Py_TPFLAGS_DEFAULT,
                                  Window_slots};

/* Called with the GIL held. */
static int init_python_types(char *err, size_t errlen) {
    if (g_WindowType)
        return 1;
    PyObject *builtins = PyImport_ImportModule("builtins");
    if (builtins) {
        g_IndexError = PyObject_GetAttrString(builtins, "IndexError");
        g_BufferError = PyObject_GetAttrString(builtins, "BufferError");
        Py_DECREF(builtins);
    }
    g_PlaneType = (PyTypeObject *)PyType_FromSpec(&Plane_spec);
    g_WindowType = (PyTypeObject *)PyType_FromSpec(&Window_spec);
    if (!g_IndexError || !g_BufferError || !g_PlaneType || !g_WindowType) {
        PyErr_Clear();
        snprintf(err, errlen, ERR_PREFIX "could not initialise the Python bridge types");
        g_WindowType = NULL;
        return 0;
    }
    return 1;
}

/* Text of the pending Python exception (clears it). */
static void fetch_python_error(char *buf, size_t len, const char *what) {
    PyObject *type = NULL, *value = NULL, *tb = NULL;
    PyErr_Fetch(&type, &value, &tb);
    const char *msg = NULL;
    PyObject *s = value ? PyObject_Str(value) : NULL;
    if (s)
        msg = PyUnicode_AsUTF8AndSize(s, NULL);
    PyErr_Clear();
    snprintf(buf, len, ERR_PREFIX "%s: %s", what, msg ? msg : "unknown Python error");
    Py_XDECREF(s);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
}

/* ------------------------------------------------------------------------------------------------ */
/* The filter instance                                                                              */

typedef struct {
    int n;             /* source frame number, -1 when the slot is empty */
    const VSFrame *f;  /* reference owned by the ring */
    uint64_t stamp;    /* last use, for least-recently-used eviction */
} RingSlot;

typedef struct {
    VSNode *node;
    VSVideoInfo vi;          /* output: 4x the input */
    int in_w, in_h, num_frames;
    int reset_interval, warmup;
    PyObject *bridge;         /* vsanimesr._vsbridge.Bridge */
    pthread_mutex_t lock;     /* guards the ring */
    RingSlot *ring;
    int ring_cap;
    uint64_t clock;
} UpscaleData;

typedef struct {
    int lo, hi;
    const VSFrame *frames[]; /* hi - lo + 1 entries: held references from the ring, or NULL (requested) */
} Request;

/* Inclusive range of source frames that output frame n may read: from the warm-up before its chain start
 * (P = the latest multiple of reset_interval at or before n) to its next neighbour. Mirrors AnimeSR.window. */
static void window_of(const UpscaleData *d, int n, int *lo, int *hi) {
    int p = d->reset_interval > 0 ? (n / d->reset_interval) * d->reset_interval : 0;
    int l = p - d->warmup - 1;
    *lo = l < 0 ? 0 : l;
    *hi = n + 1 < d->num_frames - 1 ? n + 1 : d->num_frames - 1;
}

static void free_request(Request *r) {
    if (!r)
        return;
    for (int i = 0; i <= r->hi - r->lo; i++)
        if (r->frames[i])
            g_vsapi->freeFrame(r->frames[i]);
    free(r);
}

/* Caller holds d->lock. */
static void ring_put(UpscaleData *d, int n, const VSFrame *f) {
    int victim = 0;
    for (int i = 0; i < d->ring_cap; i++) {
        if (d->ring[i].n == n) {
            d->ring[i].stamp = ++d->clock;
            return;
        }
        if (d->ring[i].n < 0 || (d->ring[victim].n >= 0 && d->ring[i].stamp < d->ring[victim].stamp))
            victim = i;
    }
    if (d->ring[victim].f)
        g_vsapi->freeFrame(d->ring[victim].f);
    d->ring[victim].n = n;
    d->ring[victim].f = g_vsapi->addFrameRef(f);
    d->ring[victim].stamp = ++d->clock;
}

static const VSFrame *ring_get(UpscaleData *d, int n) {
    for (int i = 0; i < d->ring_cap; i++)
        if (d->ring[i].n == n) {
            d->ring[i].stamp = ++d->clock;
            return g_vsapi->addFrameRef(d->ring[i].f);
        }
    return NULL;
}

/* Py_None would be a data relocation that the loader resolves at dlopen time, so a Python-less host could not load
 * the plugin; Py_BuildValue("") returns None through a lazily bound function instead. */
static int is_none(PyObject *o) {
    PyObject *none = Py_BuildValue("");
    int same = o == none;
    Py_XDECREF(none);
    return same;
}

/* Runs the engine for frame n on the window (all references in r). Returns the new frame or NULL + err. */
static VSFrame *run_engine(UpscaleData *d, int n, Request *r, VSCore *core, const VSAPI *vsapi, char *err,
                           size_t errlen) {
    if (!python_available()) {
        snprintf(err, errlen, ERR_PREFIX "frame %d: the Python interpreter is gone", n);
        return NULL;
    }
    const VSFrame *src = r->frames[n - r->lo];
    /* The engine writes straight into the new frame's planes (one device-to-host copy on CUDA, no temporary). */
    VSFrame *dst = vsapi->newVideoFrame(&d->vi.format, d->vi.width, d->vi.height, src, core);
    ptrdiff_t stride = vsapi->getStride(dst, 0);
    PyGILState_STATE gil = PyGILState_Ensure();

    PyObject *planes = PyTuple_New(3);
    for (int p = 0; planes && p < 3; p++) {
        PyObject *mv = PyMemoryView_FromMemory((char *)vsapi->getWritePtr(dst, p), (Py_ssize_t)stride * d->vi.height,
                                               PyBUF_WRITE);
        if (!mv) {
            Py_CLEAR(planes);
            break;
        }
        PyTuple_SetItem(planes, p, mv); /* steals mv */
    }
    WindowObject *win = planes ? (WindowObject *)PyType_GenericAlloc(g_WindowType, 0) : NULL;
    PyObject *result = NULL;
    if (win) {
        int count = r->hi - r->lo + 1;
        win->lo = r->lo;
        win->hi = r->hi;
        win->frames = (const VSFrame **)calloc((size_t)count, sizeof(VSFrame *));
        for (int i = 0; win->frames && i < count; i++)
            win->frames[i] = vsapi->addFrameRef(r->frames[i]);
        result = PyObject_CallMethod(d->bridge, "process", "iOOn", n, (PyObject *)win, planes, (Py_ssize_t)stride);
        Py_DECREF((PyObject *)win);
    }
    if (planes) { /* the views end here: Python must not reach the frame's memory after this call */
        for (int p = 0; p < 3; p++) {
            PyObject *ok = PyObject_CallMethod(PyTuple_GetItem(planes, p), "release", NULL);
            if (ok)
                Py_DECREF(ok);
            else
                PyErr_Clear();
        }
        Py_DECREF(planes);
    }
    if (!result) {
        char what[64];
        snprintf(what, sizeof what, "frame %d", n);
        fetch_python_error(err, errlen, what);
    } else if (PyUnicode_Check(result)) { /* the bridge formats engine exceptions into readable text */
        const char *msg = PyUnicode_AsUTF8AndSize(result, NULL);
        snprintf(err, errlen, "%s", msg ? msg : ERR_PREFIX "engine error (message not readable)");
        PyErr_Clear();
    } else if (!is_none(result)) {
        snprintf(err, errlen, ERR_PREFIX "frame %d: the engine bridge returned a value instead of None", n);
    }
    if (err[0]) {
        vsapi->freeFrame(dst);
        dst = NULL;
    }
done:
    Py_XDECREF(result);
    PyGILState_Release(gil);
    return dst;
}

/* All frames of the window are in r: remember them in the ring, run the engine, free r. */
static const VSFrame *produce(UpscaleData *d, int n, Request *r, VSFrameContext *ctx, VSCore *core,
                              const VSAPI *vsapi) {
    pthread_mutex_lock(&d->lock);
    for (int k = r->lo; k <= r->hi; k++)
        ring_put(d, k, r->frames[k - r->lo]);
    pthread_mutex_unlock(&d->lock);

    char err[4096] = {0};
    VSFrame *dst = run_engine(d, n, r, core, vsapi, err, sizeof err);
    free_request(r);
    if (!dst)
        vsapi->setFilterError(err[0] ? err : ERR_PREFIX "unknown error", ctx);
    return dst;
}

static const VSFrame *VS_CC upscale_get_frame(int n, int activation_reason, void *instance_data, void **frame_data,
                                              VSFrameContext *ctx, VSCore *core, const VSAPI *vsapi) {
    UpscaleData *d = (UpscaleData *)instance_data;
    if (activation_reason == arInitial) {
        int lo, hi;
        window_of(d, n, &lo, &hi);
        Request *r = (Request *)calloc(1, sizeof(Request) + sizeof(VSFrame *) * (size_t)(hi - lo + 1));
        if (!r) {
            vsapi->setFilterError(ERR_PREFIX "out of memory", ctx);
            return NULL;
        }
        r->lo = lo;
        r->hi = hi;
        pthread_mutex_lock(&d->lock);
        for (int k = lo; k <= hi; k++)
            r->frames[k - lo] = ring_get(d, k);
        pthread_mutex_unlock(&d->lock);
        int requested = 0;
        for (int k = lo; k <= hi; k++)
            if (!r->frames[k - lo]) {
                vsapi->requestFrameFilter(k, d->node, ctx);
                requested++;
            }
        if (requested) {
            *frame_data = r;
            return NULL;
        }
        /* The ring holds the whole window: no arAllFramesReady will follow, so produce the frame now. The
         * bridge serialises its Python call, so this is safe beside another instance call. */
        return produce(d, n, r, ctx, core, vsapi);
    }
    Request *r = (Request *)*frame_data;
    *frame_data = NULL;
    if (activation_reason == arError || !r) {
        free_request(r);
        return NULL;
    }
    /* arAllFramesReady */
    for (int k = r->lo; k <= r->hi; k++) {
        if (!r->frames[k - r->lo])
            r->frames[k - r->lo] = vsapi->getFrameFilter(k, d->node, ctx);
        if (!r->frames[k - r->lo]) {
            vsapi->setFilterError(ERR_PREFIX "a source frame could not be fetched", ctx);
            free_request(r);
            return NULL;
        }
    }
    return produce(d, n, r, ctx, core, vsapi);
}

static void VS_CC upscale_free(void *instance_data, VSCore *core, const VSAPI *vsapi) {
    (void)core;
    UpscaleData *d = (UpscaleData *)instance_data;
    if (d->bridge && python_available()) {
        PyGILState_STATE gil = PyGILState_Ensure();
        Py_DECREF(d->bridge);
        PyGILState_Release(gil);
    }
    for (int i = 0; i < d->ring_cap; i++)
        if (d->ring[i].f)
            vsapi->freeFrame(d->ring[i].f);
    free(d->ring);
    pthread_mutex_destroy(&d->lock);
    vsapi->freeNode(d->node);
    free(d);
}

/* ------------------------------------------------------------------------------------------------ */
/* Graph building                                                                                   */

/* Builds the keyword arguments for _vsbridge.create; unset optional arguments are left out. */
static PyObject *bridge_kwargs(const VSMap *in, const VSVideoInfo *vi, const char *fmt_name, const VSAPI *vsapi) {
    PyObject *kw = Py_BuildValue("{s:i,s:i,s:i,s:s}", "width", vi->width, "height", vi->height, "num_frames",
                                 vi->numFrames, "format", fmt_name);
    if (!kw)
        return NULL;
    static const char *data_args[] = {"model", "device"};
    static const char *int_args[] = {"fp16",  "tile",    "tile_overlap", "reset_interval",
                                     "warmup", "bf16", "compile",      "tf32"};
    static const char *float_args[] = {"scene_threshold", "outscale"};
    int err;
    for (size_t i = 0; i < sizeof data_args / sizeof *data_args; i++) {
        const char *v = vsapi->mapGetData(in, data_args[i], 0, &err);
        if (err)
            continue;
        PyObject *o = PyUnicode_DecodeUTF8(v, vsapi->mapGetDataSize(in, data_args[i], 0, NULL), "replace");
        if (!o || PyDict_SetItemString(kw, data_args[i], o) < 0) {
            Py_XDECREF(o);
            Py_DECREF(kw);
            return NULL;
        }
        Py_DECREF(o);
    }
    for (size_t i = 0; i < sizeof int_args / sizeof *int_args; i++) {
        int64_t v = vsapi->mapGetInt(in, int_args[i], 0, &err);
        if (err)
            continue;
        PyObject *o = PyLong_FromLongLong(v);
        if (!o || PyDict_SetItemString(kw, int_args[i], o) < 0) {
            Py_XDECREF(o);
            Py_DECREF(kw);
            return NULL;
        }
        Py_DECREF(o);
    }
    for (size_t i = 0; i < sizeof float_args / sizeof *float_args; i++) {
        double v = vsapi->mapGetFloat(in, float_args[i], 0, &err);
        if (err)
            continue;
        PyObject *o = PyFloat_FromDouble(v);
        if (!o || PyDict_SetItemString(kw, float_args[i], o) < 0) {
            Py_XDECREF(o);
            Py_DECREF(kw);
            return NULL;
        }
        Py_DECREF(o);
    }
    return kw;
}

static int get_int_attr(PyObject *o, const char *name, int *out) {
    PyObject *v = PyObject_GetAttrString(o, name);
    if (!v)
        return 0;
    long x = PyLong_AsLong(v);
    Py_DECREF(v);
    if (x == -1 && PyErr_Occurred())
        return 0;
    *out = (int)x;
    return 1;
}

/* Calls vsanimesr._vsbridge.create(...). Returns a new reference to the bridge, or NULL with err set. */
static PyObject *make_bridge(const VSMap *in, const VSVideoInfo *vi, const char *fmt_name, const VSAPI *vsapi,
                             char *err, size_t errlen) {
    PyObject *bridge = NULL;
    PyGILState_STATE gil = PyGILState_Ensure();
    if (!init_python_types(err, errlen))
        goto done;
    PyObject *mod = PyImport_ImportModule("vsanimesr._vsbridge");
    if (!mod) {
        fetch_python_error(err, errlen, "cannot import vsanimesr._vsbridge (is the vsanimesr package installed?)");
        goto done;
    }
    PyObject *create = PyObject_GetAttrString(mod, "create");
    Py_DECREF(mod);
    PyObject *kw = create ? bridge_kwargs(in, vi, fmt_name, vsapi) : NULL;
    PyObject *args = kw ? PyTuple_New(0) : NULL;
    PyObject *res = args ? PyObject_Call(create, args, kw) : NULL;
    Py_XDECREF(args);
    Py_XDECREF(kw);
    Py_XDECREF(create);
    if (!res) {
        fetch_python_error(err, errlen, "creating the engine failed");
    } else if (PyUnicode_Check(res)) { /* a readable graph-build error from the bridge */
        const char *msg = PyUnicode_AsUTF8AndSize(res, NULL);
        snprintf(err, errlen, "%s", msg ? msg : ERR_PREFIX "invalid arguments");
        PyErr_Clear();
        Py_DECREF(res);
    } else {
        bridge = res;
    }
done:
    PyGILState_Release(gil);
    return bridge;
}

static void VS_CC upscale_create(const VSMap *in, VSMap *out, void *user_data, VSCore *core, const VSAPI *vsapi) {
    (void)user_data;
    char err[4096] = {0};
    if (!python_available()) {
        vsapi->mapSetError(out, ERR_PREFIX "needs Python: this host has no Python interpreter loaded; call it from "
                                "a VapourSynth Python script (python or vspipe) with the vsanimesr package installed");
        return;
    }
    g_vsapi = vsapi;
    VSNode *node = vsapi->mapGetNode(in, "clip", 0, NULL);
    const VSVideoInfo *vi = vsapi->getVideoInfo(node);
    char fmt_name[32] = "variable";
    if (vi->format.colorFamily != cfUndefined)
        vsapi->getVideoFormatName(&vi->format, fmt_name);
    if (vi->format.colorFamily == cfUndefined) {
        snprintf(err, sizeof err, ERR_PREFIX "clip: variable format is not supported (need constant RGBS or RGBH)");
    } else if (vi->width <= 0 || vi->height <= 0) {
        snprintf(err, sizeof err, ERR_PREFIX "clip: variable frame size is not supported (format %s)", fmt_name);
    } else if (vi->format.colorFamily != cfRGB || vi->format.sampleType != stFloat ||
               (vi->format.bitsPerSample != 32 && vi->format.bitsPerSample != 16)) {
        snprintf(err, sizeof err,
                 ERR_PREFIX "clip: format %s is not supported (need RGBS or RGBH; vsanimesr.upscale() converts "
                            "YUV, GRAY and integer RGB)",
                 fmt_name);
    } else if ((int64_t)vi->width * 4 > 0x7fffffff / 16 || (int64_t)vi->height * 4 > 0x7fffffff / 16) {
        snprintf(err, sizeof err, ERR_PREFIX "clip: frame size %dx%d is too large", vi->width, vi->height);
    }
    if (err[0]) {
        vsapi->mapSetError(out, err);
        vsapi->freeNode(node);
        return;
    }

    PyObject *bridge = make_bridge(in, vi, fmt_name, vsapi, err, sizeof err);
    int reset_interval = 0, warmup = 0, ring_cap = 8, out_w = 0, out_h = 0;
    if (bridge) {
        PyGILState_STATE gil = PyGILState_Ensure();
        if (!get_int_attr(bridge, "reset_interval", &reset_interval) || !get_int_attr(bridge, "warmup", &warmup) ||
            !get_int_attr(bridge, "ring_capacity", &ring_cap) || !get_int_attr(bridge, "out_width", &out_w) ||
            !get_int_attr(bridge, "out_height", &out_h)) {
            fetch_python_error(err, sizeof err, "bridge is missing an attribute");
            Py_CLEAR(bridge);
        }
        PyGILState_Release(gil);
    }
    if (!bridge) {
        vsapi->mapSetError(out, err[0] ? err : ERR_PREFIX "creating the engine failed");
        vsapi->freeNode(node);
        return;
    }

    UpscaleData *d = (UpscaleData *)calloc(1, sizeof(UpscaleData));
    d->node = node;
    d->vi = *vi;
    d->vi.width = vi->width * 4;
    d->vi.height = vi->height * 4;
    d->in_w = vi->width;
    d->in_h = vi->height;
    d->num_frames = vi->numFrames;
    d->reset_interval = reset_interval;
    d->warmup = warmup;
    d->bridge = bridge;
    d->ring_cap = ring_cap < 8 ? 8 : ring_cap;
    d->ring = (RingSlot *)calloc((size_t)d->ring_cap, sizeof(RingSlot));
    for (int i = 0; i < d->ring_cap; i++)
        d->ring[i].n = -1;
    pthread_mutex_init(&d->lock, NULL);

    VSFilterDependency deps[] = {{node, rpGeneral}};
    VSNode *filter = vsapi->createVideoFilter2("Upscale", &d->vi, upscale_get_frame, upscale_free,
                                               fmParallelRequests, deps, 1, d, core);
    if (!filter) {
        vsapi->mapSetError(out, ERR_PREFIX "could not create the filter node");
        return; /* the core has called upscale_free */
    }
    if (out_w == d->vi.width && out_h == d->vi.height) {
        vsapi->mapConsumeNode(out, "clip", filter, maReplace);
        return;
    }
    /* outscale != 4: resize the x4 result with Spline36 (sharp, little ringing) to exactly out_w x out_h.
     * The resizer also updates _SARNum/_SARDen when rounding makes the scale uneven. */
    VSPlugin *resize = vsapi->getPluginByID("com.vapoursynth.resize", core);
    if (!resize) {
        vsapi->mapSetError(out, ERR_PREFIX "outscale: the core's resize plugin is not available");
        vsapi->freeNode(filter);
        return;
    }
    VSMap *args = vsapi->createMap();
    vsapi->mapConsumeNode(args, "clip", filter, maReplace);
    vsapi->mapSetInt(args, "width", out_w, maReplace);
    vsapi->mapSetInt(args, "height", out_h, maReplace);
    VSMap *ret = vsapi->invoke(resize, "Spline36", args);
    vsapi->freeMap(args);
    const char *e = vsapi->mapGetError(ret);
    if (e) {
        snprintf(err, sizeof err, ERR_PREFIX "outscale: resizing failed: %s", e);
        vsapi->mapSetError(out, err);
    } else {
        vsapi->mapConsumeNode(out, "clip", vsapi->mapGetNode(ret, "clip", 0, NULL), maReplace);
    }
    vsapi->freeMap(ret);
}

VS_EXTERNAL_API(void) VapourSynthPluginInit2(VSPlugin *plugin, const VSPLUGINAPI *vspapi) {
    vspapi->configPlugin(PLUGIN_ID, "animesr", "AnimeSR x4 recurrent anime video super-resolution (vsanimesr)",
                         VS_MAKE_VERSION(0, 1), VAPOURSYNTH_API_VERSION, 0, plugin);
    vspapi->registerFunction("Upscale",
                             "clip:vnode;model:data:opt;device:data:opt;fp16:int:opt;tile:int:opt;"
                             "tile_overlap:int:opt;reset_interval:int:opt;warmup:int:opt;"
                             "scene_threshold:float:opt;outscale:float:opt;bf16:int:opt;compile:int:opt;tf32:int:opt;",
                             "clip:vnode;", upscale_create, NULL, plugin);
}
