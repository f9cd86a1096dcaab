//! A real browser for the back-office tests: Debian's headless Chromium driven through its
//! ChromeDriver over WebDriver (fantoccini). Each [`Browser`] runs its own ChromeDriver on a free
//! loopback port with a fresh, empty profile, and saves screenshots under
//! `target/screenshots/`.
//!
//! Without `chromedriver` and `chromium` the browser tests are skipped with a message, except in
//! CI (`CI=true`), where they must run: `.ci/run` installs both when missing.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};

/// Where Debian installs them.
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// How long a step waits for the page to show what it expects.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// A headless Chromium session, with the ChromeDriver behind it; both end when it is dropped.
pub struct Browser {
    /// The WebDriver session.
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
    screenshots: PathBuf,
}

fn installed(path: &str) -> bool {
    Path::new(path).exists()
}

/// `target/screenshots`, beside the test executables (`target/<profile>/deps/<test>`).
fn screenshot_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let target = exe
        .ancestors()
        .nth(3)
        .map_or_else(|| PathBuf::from("target"), Path::to_path_buf);
    let dir = target.join("screenshots");
    std::fs::create_dir_all(&dir).expect("target/screenshots can be created");
    dir
}

impl Browser {
    /// Starts ChromeDriver and a headless Chromium at 1280×800, or `None` (with a message) when
    /// they are not installed here and this is not CI.
    pub async fn start() -> Option<Self> {
        if !installed(CHROMIUM) || !installed(CHROMEDRIVER) {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "chromium and chromium-driver must be installed in CI (.ci/run installs them)"
            );
            eprintln!(
                "skipped: {CHROMIUM} or {CHROMEDRIVER} is missing (apt-get install chromium chromium-driver)"
            );
            return None;
        }
        let port = crate::free_loopback_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let webdriver = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(response) = http.get(format!("{webdriver}/status")).send().await
                && response.status().is_success()
            {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not answer");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().expect("a profile directory");
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".into(), "chrome".into());
        capabilities.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--window-size=1280,800",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        // ChromeDriver listens on loopback over plain HTTP: no TLS stack is needed.
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&webdriver)
            .await
            .expect("a Chromium session");
        client
            .set_window_size(1280, 800)
            .await
            .expect("the window takes the laptop size");
        Some(Self {
            client,
            driver,
            _profile: profile,
            screenshots: screenshot_dir(),
        })
    }

    /// Saves the page as `target/screenshots/<name>.png`.
    pub async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("a screenshot");
        std::fs::write(self.screenshots.join(format!("{name}.png")), png)
            .expect("the screenshot is saved");
    }

    /// Saves the page as it looks on a phone (390 px wide), then goes back to the laptop size.
    pub async fn phone_screenshot(&self, name: &str) {
        self.client
            .set_window_size(390, 844)
            .await
            .expect("phone size");
        self.screenshot(name).await;
        self.client
            .set_window_size(1280, 800)
            .await
            .expect("laptop size");
    }

    /// Opens `url`.
    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("the page opens");
    }

    /// The current URL, as text.
    pub async fn url(&self) -> String {
        self.client
            .current_url()
            .await
            .expect("a current URL")
            .to_string()
    }

    /// The element `css` selects, waiting for it to appear.
    pub async fn find(&self, css: &str) -> Element {
        match self
            .client
            .wait()
            .at_most(STEP_TIMEOUT)
            .for_element(Locator::Css(css))
            .await
        {
            Ok(element) => element,
            Err(error) => panic!("{css} did not appear on {}: {error}", self.url_now().await),
        }
    }

    async fn url_now(&self) -> String {
        self.client
            .current_url()
            .await
            .map(|u| u.to_string())
            .unwrap_or_default()
    }

    /// Whether the page has an element `css` selects, right now.
    pub async fn has(&self, css: &str) -> bool {
        !self
            .client
            .find_all(Locator::Css(css))
            .await
            .expect("a query of the page")
            .is_empty()
    }

    /// Clicks `css`.
    pub async fn click(&self, css: &str) {
        self.find(css).await.click().await.expect("the click lands");
    }

    /// Types `text` into the field `css`, replacing what it held.
    pub async fn fill(&self, css: &str, text: &str) {
        let field = self.find(css).await;
        field.clear().await.expect("the field clears");
        field.send_keys(text).await.expect("the text is typed");
    }

    /// Chooses the option with `value` of the select `css`.
    pub async fn select(&self, css: &str, value: &str) {
        self.find(css)
            .await
            .select_by_value(value)
            .await
            .expect("the option is chosen");
    }

    /// The visible text of `css`.
    pub async fn text(&self, css: &str) -> String {
        // Right after a click the old page may be replaced under our feet: read again from the
        // new one.
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            match self.find(css).await.text().await {
                Ok(text) => return text,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => panic!("the text of {css}: {error}"),
            }
        }
    }

    /// The `value` of the input `css`.
    pub async fn value(&self, css: &str) -> String {
        self.find(css)
            .await
            .prop("value")
            .await
            .expect("the value property")
            .unwrap_or_default()
    }

    /// The whole page's visible text.
    pub async fn page_text(&self) -> String {
        self.text("body").await
    }

    /// Waits, without reloading, until the page shows `expected`: after a click the browser may
    /// still be on the old page for a moment.
    pub async fn wait_for_text(&self, expected: &str) {
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            let text = self.page_text().await;
            if text.contains(expected) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the page never showed {expected:?}; it reads {text}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Reloads the page until `css` reads `expected` (a status that a background worker sets).
    pub async fn reload_until_text(&self, css: &str, expected: &str) {
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            if self.text(css).await.trim() == expected {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{css} never read {expected}; it reads {}",
                self.text(css).await
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
            self.client.refresh().await.expect("the page reloads");
        }
    }

    /// Reloads the page until the text of `css` contains `expected`.
    pub async fn reload_until_contains(&self, css: &str, expected: &str) {
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            if self.text(css).await.contains(expected) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{css} never showed {expected}; it reads {}",
                self.text(css).await
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
            self.client.refresh().await.expect("the page reloads");
        }
    }

    /// The value of the browser's cookie `name` for the current site.
    pub async fn cookie(&self, name: &str) -> Option<String> {
        self.client
            .get_named_cookie(name)
            .await
            .ok()
            .map(|cookie| cookie.value().to_owned())
    }

    /// Ends the session and ChromeDriver.
    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
