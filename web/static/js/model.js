// A model's interactive 3D view (drag to turn, wheel or pinch to zoom), with three.js, which
// only this module loads and only the file page of a model imports (see vendor/README.md).
import * as THREE from "/static/vendor/three-0.170.0/build/three.module.min.js";
import { OrbitControls } from "/static/vendor/three-0.170.0/examples/jsm/controls/OrbitControls.js";
import { STLLoader } from "/static/vendor/three-0.170.0/examples/jsm/loaders/STLLoader.js";
import { OBJLoader } from "/static/vendor/three-0.170.0/examples/jsm/loaders/OBJLoader.js";
import { ThreeMFLoader } from "/static/vendor/three-0.170.0/examples/jsm/loaders/3MFLoader.js";

function css(name) {
  return getComputedStyle(document.body).getPropertyValue(name).trim();
}

// The model's meshes as one group, from the file's bytes.
async function load(url, kind) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`the model could not be read (${response.status})`);
  if (kind === "OBJ") return new OBJLoader().parse(await response.text());
  if (kind === "THREEMF") return new ThreeMFLoader().parse(await response.arrayBuffer());
  const geometry = new STLLoader().parse(await response.arrayBuffer());
  // Many STL writers leave the stored normals zero: derive them from the triangles.
  geometry.computeVertexNormals();
  const group = new THREE.Group();
  group.add(new THREE.Mesh(geometry));
  return group;
}

export async function showModel(canvas, url, kind, bed) {
  const model = await load(url, kind);
  // Both sides: a model whose triangles face inwards still shows its outside.
  const material = new THREE.MeshStandardMaterial({
    color: css("--accent"), roughness: 0.6, metalness: 0.05, side: THREE.DoubleSide,
  });
  model.traverse((part) => { if (part.isMesh) part.material = material; });
  // Printers are Z-up, three.js is Y-up; then the model stands centred on the bed.
  model.rotation.x = -Math.PI / 2;
  model.updateMatrixWorld(true);
  const box = new THREE.Box3().setFromObject(model);
  const size = box.getSize(new THREE.Vector3());
  const centre = box.getCenter(new THREE.Vector3());
  model.position.set(-centre.x, -box.min.y, -centre.z);

  const scene = new THREE.Scene();
  scene.add(model);
  scene.add(new THREE.HemisphereLight(0xffffff, 0x445566, 1.4));
  const sun = new THREE.DirectionalLight(0xffffff, 1.6);
  sun.position.set(1, 2, 1.5);
  scene.add(sun);
  const plate = Math.max(bed.x, bed.y, size.x * 1.2, size.z * 1.2);
  const grid = new THREE.GridHelper(plate, Math.round(plate / 10), css("--muted"), css("--line"));
  scene.add(grid);

  // preserveDrawingBuffer: the picture stays readable (a snapshot, the tests) between draws.
  const renderer = new THREE.WebGLRenderer({ canvas, antialias: true, alpha: true, preserveDrawingBuffer: true });
  renderer.setPixelRatio(window.devicePixelRatio || 1);
  const camera = new THREE.PerspectiveCamera(40, 1, 0.1, plate * 20);
  const reach = Math.max(size.x, size.y, size.z, 10);
  camera.position.set(reach * 2.2, reach * 2.0, reach * 3.0);
  const controls = new OrbitControls(camera, canvas);
  controls.target.set(0, size.y / 2, 0);
  controls.update();

  // Drawn when something changes, never in a loop: an idle page costs nothing.
  function draw() {
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    renderer.setSize(width, height, false);
    camera.aspect = width / height;
    camera.updateProjectionMatrix();
    renderer.render(scene, camera);
  }
  controls.addEventListener("change", draw);
  new ResizeObserver(draw).observe(canvas);
  draw();
  return { triangles: countTriangles(model), size };
}

function countTriangles(model) {
  let count = 0;
  model.traverse((part) => {
    if (part.isMesh) {
      const geometry = part.geometry;
      count += (geometry.index ? geometry.index.count : geometry.attributes.position.count) / 3;
    }
  });
  return count;
}
